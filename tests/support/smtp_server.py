#!/usr/bin/env python3
"""A real SMTP server (aiosmtpd) for digestif's delivery tests, with fault modes.

Prints the port it listens on as the first line of stdout, then serves until killed.
Each accepted message is written to --out as NNNNNN.eml (raw bytes as received)
and NNNNNN.json (envelope), both through a rename so that a reader never sees
half a file.

Fault modes:
  --fail-first-data CODE   the first DATA is answered CODE (e.g. 451), later ones 250
  --reject-rcpt ADDR:CODE  RCPT TO:<ADDR> is answered CODE (repeatable)
  --drop-after N           after N accepted messages, the next DATA closes the
                           connection abruptly (once); then messages are accepted again
  --delay-ms D             wait D ms before accepting each message
  --pipelining             advertise PIPELINING (RFC 2920) in the EHLO reply

TLS (both need --tls-cert and --tls-key, PEM files):
  --starttls               offer STARTTLS and refuse mail before it (RFC 3207)
  --implicit-tls           TLS from the first byte (SMTPS, port 465 style)
Each message's .json says whether it came over TLS ("tls": true/false).
"""
import argparse
import asyncio
import json
import os
import ssl
import sys

from aiosmtpd.smtp import SMTP


class Handler:
    def __init__(self, args):
        self.out = args.out
        self.fail_first_data = args.fail_first_data
        self.reject = {}
        for spec in args.reject_rcpt:
            addr, code = spec.rsplit(":", 1)
            self.reject[addr.lower()] = int(code)
        self.drop_after = args.drop_after
        self.dropped = False
        self.delay = args.delay_ms / 1000.0
        self.pipelining = args.pipelining
        self.count = 0

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.pipelining:
            responses.insert(len(responses) - 1, "250-PIPELINING")
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        code = self.reject.get(address.lower())
        if code is not None:
            return f"{code} 5.1.1 <{address}>: no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.fail_first_data is not None:
            code = self.fail_first_data
            self.fail_first_data = None
            return f"{code} 4.3.0 try again later"
        if self.drop_after is not None and not self.dropped and self.count >= self.drop_after:
            self.dropped = True
            server.transport.abort()
            return "421 closing"
        if self.delay:
            await asyncio.sleep(self.delay)
        self.count += 1
        n = self.count
        base = os.path.join(self.out, f"{n:06d}")
        with open(base + ".eml.tmp", "wb") as f:
            f.write(envelope.original_content or envelope.content)
        os.rename(base + ".eml.tmp", base + ".eml")
        with open(base + ".json.tmp", "w") as f:
            tls = server.transport.get_extra_info("ssl_object") is not None
            json.dump({"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos, "tls": tls}, f)
        os.rename(base + ".json.tmp", base + ".json")
        return "250 2.0.0 OK queued"


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--fail-first-data", type=int)
    p.add_argument("--reject-rcpt", action="append", default=[])
    p.add_argument("--drop-after", type=int)
    p.add_argument("--delay-ms", type=int, default=0)
    p.add_argument("--pipelining", action="store_true")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--starttls", action="store_true")
    p.add_argument("--implicit-tls", action="store_true")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    handler = Handler(args)
    ctx = None
    if args.starttls or args.implicit_tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
    starttls = ctx if args.starttls else None
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(
            handler,
            hostname="smtp.test",
            data_size_limit=64 * 1024 * 1024,
            tls_context=starttls,
            require_starttls=starttls is not None,
        ),
        host="127.0.0.1",
        port=args.port,
        ssl=ctx if args.implicit_tls else None,
    )
    port = server.sockets[0].getsockname()[1]
    print(port, flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
