"""callvault: CPNI-compliant call recording and caller authentication.

This package only wires the architecture's packages (`telephony`, `ivr`, `recordings`,
`redaction`, `storage`) together: configuration, the command line and app assembly.
"""

__version__ = "0.1.0"
