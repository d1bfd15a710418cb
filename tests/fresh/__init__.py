"""The README's set-up on a fresh machine (deploy/fresh-debian-check.sh runs it for real)."""
