"""An echo server: every ECHO message is answered with the same text (same request id).

    python echo_server.py 9000      # PORT, default 0 = any free port; Ctrl+C stops it
"""

import sys

from veltix_rs import ClientInfo, MessageType, Request, Response, Server, ServerConfig

ECHO = MessageType(200, "echo")


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server = Server(ServerConfig(host="127.0.0.1", port=port))

    @server.route(ECHO)
    def echo(client: ClientInfo, msg: Response) -> None:
        reply = Request(ECHO, msg.content)
        reply.respond(msg)  # same request id, so the sender's send_and_wait gets it
        server.send(reply, client)

    server.on_connect(lambda client: print(f"hello {client.ip}:{client.port}", flush=True))
    server.start()
    print(f"listening on 127.0.0.1:{server.port}", flush=True)
    server.wait_until_closed()
    print("closed", flush=True)


if __name__ == "__main__":
    main()
