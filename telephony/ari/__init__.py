"""Asterisk through ARI: the sandbox that runs a real Asterisk here (`sandbox`); the REST
and events adapter comes with the rest of issue 4. ARI words stay inside this package."""
