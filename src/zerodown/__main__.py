"""`python -m zerodown` is the `zerodown` command."""

from zerodown.cli import main

main()
