"""Reliability tests: real services under sustained load or killed with SIGKILL, and checks of what every client received."""
