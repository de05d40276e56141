"""A TLS echo server that lets in only clients presenting a token (veltix_rs extras).

    python tls_echo_server.py CERT.pem KEY.pem TOKEN [PORT]   # PORT default 0; Ctrl+C stops it

Clients: tls_echo_client.py with the CA that issued CERT.pem and the same TOKEN.
"""

import sys

from veltix_rs import (Accept, AuthRequest, ClientInfo, MessageType, Reject, Request, Response,
                       Server, ServerConfig)

ECHO = MessageType(200, "echo")


def main() -> int:
    if len(sys.argv) not in (4, 5):
        print("usage: tls_echo_server.py CERT.pem KEY.pem TOKEN [PORT]", file=sys.stderr)
        return 2
    cert, key, token = sys.argv[1:4]
    port = int(sys.argv[4]) if len(sys.argv) == 5 else 0
    server = Server(ServerConfig(host="127.0.0.1", port=port, tls_cert=cert, tls_key=key))

    @server.authenticate
    def check(request: AuthRequest):  # runs once per client, before on_connect
        if request.token == token:
            return Accept(tags={"user": request.meta.get("user", "anonymous")})
        print(f"refused {request.ip}:{request.port}", flush=True)
        return Reject("unauthorized")

    @server.route(ECHO)
    def echo(client: ClientInfo, msg: Response) -> None:
        server.send(Request(ECHO, msg.content).respond(msg), client)

    server.on_connect(lambda client: print(
        f"hello {client.get_tag('user')} over {client.tls.protocol}", flush=True))
    server.start()  # TlsConfigError if CERT/KEY cannot be used
    print(f"listening on 127.0.0.1:{server.port}", flush=True)
    server.wait_until_closed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
