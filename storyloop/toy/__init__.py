"""The toy story world: the embedded default that proves the loop learns (issue #6)."""
