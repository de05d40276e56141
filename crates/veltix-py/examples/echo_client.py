"""Sends one text message to an echo server and prints the reply.

    python echo_client.py 9000 "hello"      # PORT TEXT
"""

import sys

from veltix_rs import Client, ClientConfig, MessageType, Request

ECHO = MessageType(200, "echo")


def main() -> int:
    if len(sys.argv) != 3:
        print("usage: echo_client.py PORT TEXT", file=sys.stderr)
        return 2
    client = Client(ClientConfig(server_addr="127.0.0.1", port=int(sys.argv[1])))
    if not client.connect():
        print("cannot connect", file=sys.stderr)
        return 1
    # Blocks (without holding the GIL) until the reply with our request id arrives.
    reply = client.send_and_wait(Request(ECHO, text=sys.argv[2]), timeout=5.0)
    client.disconnect()
    if reply is None:
        print("no reply", file=sys.stderr)
        return 1
    print(reply.text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
