"""Measures round-trip times to any Veltix server with the built-in PING.

    python ping.py 9000 5      # PORT [COUNT, default 4]
"""

import sys

from veltix_rs import Client, ClientConfig


def main() -> int:
    if len(sys.argv) < 2:
        print("usage: ping.py PORT [COUNT]", file=sys.stderr)
        return 2
    port = int(sys.argv[1])
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    client = Client(ClientConfig(server_addr="127.0.0.1", port=port))
    if not client.connect():
        print("cannot connect", file=sys.stderr)
        return 1
    for seq in range(1, count + 1):
        rtt = client.ping_server(timeout=2.0)
        if rtt is None:
            print(f"seq={seq} timeout", file=sys.stderr)
            return 1
        print(f"seq={seq} rtt={rtt:.3f} ms", flush=True)
    client.disconnect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
