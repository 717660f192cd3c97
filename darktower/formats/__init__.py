"""Date and time formats that replace the locale's (FORMAT_MODULE_PATH): one in the whole admin, 24-hour with
seconds, as the fleet's timeline and the logs write them."""
