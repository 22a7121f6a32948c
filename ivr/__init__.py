"""The caller-authentication IVR as a pure state machine (issue 4)."""
