"""`zerodown serve`: the long-lived control plane and how the CLI talks to it."""
