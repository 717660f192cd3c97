"""Development tools, not shipped with the apps: the embedded-services supervisor (`python -m tools.devenv`) and the
fleet simulator (tools.simulator, run by `manage.py simulate_fleet`)."""
