"""hep2pcap: turn HEP (Homer Encapsulation Protocol) into pcapng that Wireshark and sngrep read."""

__version__ = "0.1.0"
