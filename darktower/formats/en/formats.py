"""English formats (LANGUAGE_CODE en-us): ISO 8601 order, 24-hour clock with seconds, the same in lists and on
change pages, so that two times an operator compares read alike."""

DATE_FORMAT = "Y-m-d"
TIME_FORMAT = "H:i:s"
DATETIME_FORMAT = "Y-m-d H:i:s"
SHORT_DATE_FORMAT = "Y-m-d"
SHORT_DATETIME_FORMAT = "Y-m-d H:i:s"
