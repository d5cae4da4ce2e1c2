"""runwasm's version strings (kept import-free for the -v and -info paths)."""

VERSION = "0.1.0"
REVISION = "dev"
