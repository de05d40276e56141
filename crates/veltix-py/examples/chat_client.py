"""A chat client: joins with NAME, sends each line of stdin, prints what others say.

    python chat_client.py 9000 alice
"""

import sys

from veltix_rs import Client, ClientConfig, MessageType, Request, Response

JOIN = MessageType(200, "join")
CHAT = MessageType(201, "chat")


def main() -> int:
    if len(sys.argv) != 3:
        print("usage: chat_client.py PORT NAME", file=sys.stderr)
        return 2
    port, name = int(sys.argv[1]), sys.argv[2]
    client = Client(ClientConfig(server_addr="127.0.0.1", port=port))

    @client.route(CHAT)
    def on_chat(msg: Response) -> None:
        print(msg.text, flush=True)

    if not client.connect():
        print("cannot connect", file=sys.stderr)
        return 1
    welcome = client.send_and_wait(Request(JOIN, text=name), timeout=5.0)
    if welcome is None:
        print("no welcome", file=sys.stderr)
        return 1
    print(welcome.text, flush=True)
    for line in sys.stdin:
        line = line.rstrip("\n")
        if line:
            client.send(Request(CHAT, text=line))
    client.disconnect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
