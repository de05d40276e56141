"""Sends one text message to tls_echo_server.py over TLS, with a token, and prints the reply.

    python tls_echo_client.py PORT CA.pem TOKEN TEXT
"""

import os
import sys

from veltix_rs import Client, ClientConfig, MessageType, Request

ECHO = MessageType(200, "echo")


def main() -> int:
    if len(sys.argv) != 5:
        print("usage: tls_echo_client.py PORT CA.pem TOKEN TEXT", file=sys.stderr)
        return 2
    port, ca, token, text = sys.argv[1:]
    client = Client(ClientConfig(server_addr="127.0.0.1", port=int(port), tls_ca=ca, token=token,
                                 meta={"user": os.environ.get("USER", "anonymous")}))
    if not client.connect():
        # e.g. "unauthorized" (the server's hook), or a TLS failure (untrusted certificate)
        print(f"cannot connect: {client.rejection_reason or client.last_error}", file=sys.stderr)
        return 1
    reply = client.send_and_wait(Request(ECHO, text=text), timeout=5.0)
    client.disconnect()
    if reply is None:
        print("no reply", file=sys.stderr)
        return 1
    print(reply.text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
