"""``python -m hep2pcap``."""

from .cli import main

main()
