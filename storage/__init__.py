"""The encrypted vault: envelope encryption, S3, metadata and the access log (issue 3)."""
