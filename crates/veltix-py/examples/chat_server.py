"""A chat server: a client joins with its name (kept as a tag), then every chat line it sends
is broadcast as ``name: line`` to everyone else.

    python chat_server.py 9000      # PORT, default 0 = any free port
"""

import sys

from veltix_rs import ClientInfo, MessageType, Request, Response, Server, ServerConfig

JOIN = MessageType(200, "join")
CHAT = MessageType(201, "chat")


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server = Server(ServerConfig(host="127.0.0.1", port=port))

    @server.route(JOIN)
    def join(client: ClientInfo, msg: Response) -> None:
        client.set_tag("name", msg.text)
        online = len(server.clients)
        welcome = Request(JOIN, text=f"welcome {msg.text} ({online} online)")
        welcome.respond(msg)
        server.send(welcome, client)

    @server.route(CHAT)
    def chat(client: ClientInfo, msg: Response) -> None:
        name = client.get_tag("name") or "anonymous"
        server.broadcast(Request(CHAT, text=f"{name}: {msg.text}"), except_clients=[client])

    server.start()
    print(f"listening on 127.0.0.1:{server.port}", flush=True)
    server.wait_until_closed()


if __name__ == "__main__":
    main()
