"""Post-deploy verification: smoke checks, dependency checks and a log scan of the new revision.

`PostDeployVerifier` (in `zerodown.verify.verifier`) is the engine's `Verifier`; this package's
`__init__` imports nothing so that `zerodown.config.verify` can use `zerodown.verify.jsonpath` and
`zerodown.verify.placeholders` without a cycle through the engine.
"""
