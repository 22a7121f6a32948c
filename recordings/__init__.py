"""Recordings: metadata, the durable post-call pipeline and the QA web app (issues 3, 6)."""
