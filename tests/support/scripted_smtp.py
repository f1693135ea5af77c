#!/usr/bin/env python3
"""A scripted SMTP server for digestif's tests: the misbehaviours aiosmtpd cannot show.

Standard library only (asyncio + ssl). Prints the port it listens on as the first
line of stdout, then serves until killed. Each accepted message is written to --out
as NNNNNN.eml (the data as received, dot-unstuffed) and NNNNNN.json (envelope:
mail_from, rcpt_tos, tls), both through a rename so that a reader never sees half a
file: the same layout as smtp_server.py. Every connection is also logged to
--out/session.log, one line per event, written at once:

  C > LINE      a command line from connection C (message data: "> <data N bytes>")
  C < LINE      a reply line sent on connection C
  C ! EVENT     connect, tls, handshake-failed, eof, closed, accepted N, and the
                protocol faults seen:
                  ahead CMD     the client sent CMD before the reply to the command
                                before it that it had to wait for (without
                                PIPELINING: every command; with it: EHLO, HELO,
                                STARTTLS, AUTH, DATA, QUIT, NOOP, RSET, as RFC 2920 says)

Modes (--tls-cert and --tls-key, PEM files, for the TLS ones):
  --mode plain|starttls|tls   plain (default); STARTTLS offered and required before
                              MAIL (RFC 3207); implicit TLS from the first byte
  --no-pipelining             do not advertise PIPELINING
  --ahead-wait-ms W           after each command that must be answered before the
                              next, wait W ms for bytes sent ahead before replying
                              (default 10 without PIPELINING, 0 with it)

Script:
  --reply KEY=REPLY   answer KEY with REPLY ("553 5.7.1 Sender address rejected").
                      KEY: MAIL, RCPT, RCPT:ADDR (that recipient only; wins over
                      RCPT), DATA (the DATA command), DOT (after the end of the data),
                      DOT:ADDR (after the data of a message to ADDR), EHLO,
                      STARTTLS; KEY#N: only the first N times (then as usual).
                      Repeatable. A 4xx/5xx to MAIL or RCPT leaves the
                      sender/recipient out of the transaction, as a real server does.
  --inject-after-starttls LINE
                      the 220 to STARTTLS is followed by LINE in the same write,
                      before the handshake (response injection, CVE-2011-0411 class)
  --close-after N     in each session, after N accepted messages, the next command
                      is answered "421 4.3.2 ..." and the connection closed (any
                      421, scripted with --reply too, closes the connection)
  --delay-ms D        wait D ms before answering the end of each message's data
  --auth "MECH ..."   advertise AUTH with these mechanisms (PLAIN and LOGIN are
                      understood) and require it before MAIL; a mechanism not
                      advertised gets 504. The log shows "AUTH MECH ***" and the
                      event "auth ok USER" or "auth failed USER", never a password.
  --auth-user U:P     the one account that logs in (default user:secret)
                      (the message is recorded after the wait, before the reply)
"""
import argparse
import asyncio
import base64
import binascii
import json
import os
import ssl
import sys

# RFC 2920: these end a group; the client must wait for their reply.
GROUP_ENDERS = {"EHLO", "HELO", "STARTTLS", "AUTH", "DATA", "QUIT", "NOOP", "RSET"}


class Log:
    def __init__(self, path):
        self.f = open(path, "a", buffering=1, encoding="utf-8", errors="replace")

    def write(self, conn, kind, text):
        self.f.write(f"{conn} {kind} {text}\n")


class Server:
    def __init__(self, args):
        self.args = args
        self.out = args.out
        self.log = Log(os.path.join(args.out, "session.log"))
        # (KIND, ADDR) -> [reply, uses left or None for always]
        self.replies = {}
        for spec in args.reply:
            key, sep, reply = spec.partition("=")
            if not sep or len(reply) < 3 or not reply[:3].isdigit():
                sys.exit(f"--reply {spec!r}: want KEY=CODE TEXT")
            key, _, times = key.partition("#")
            if times and not times.isdigit():
                sys.exit(f"--reply {spec!r}: #N wants a number")
            kind, _, addr = key.partition(":")
            kind = kind.upper()
            if kind not in {"MAIL", "RCPT", "DATA", "DOT", "EHLO", "STARTTLS"}:
                sys.exit(f"--reply {spec!r}: unknown key {kind}")
            self.replies[(kind, addr.lower())] = [reply, int(times) if times else None]
        self.pipelining = not args.no_pipelining
        wait = args.ahead_wait_ms
        if wait is None:
            wait = 0 if self.pipelining else 10
        self.ahead_wait = wait / 1000.0
        self.ctx = None
        if args.mode != "plain":
            if not (args.tls_cert and args.tls_key):
                sys.exit(f"--mode {args.mode} needs --tls-cert and --tls-key")
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(args.tls_cert, args.tls_key)
        self.auth = [m.upper() for m in (args.auth or "").split()]
        self.account = tuple(args.auth_user.split(":", 1))
        self.connections = 0
        self.accepted = 0

    def reply_for(self, kind, *addrs):
        """The scripted reply to KIND (for one of ADDRS first), counting one use of it."""
        for key in [(kind, a.lower()) for a in addrs] + [(kind, "")]:
            entry = self.replies.get(key)
            if entry is None or entry[1] == 0:
                continue
            if entry[1] is not None:
                entry[1] -= 1
            return entry[0]
        return None

    def record(self, mail_from, rcpts, data, tls):
        self.accepted += 1
        base = os.path.join(self.out, f"{self.accepted:06d}")
        with open(base + ".eml.tmp", "wb") as f:
            f.write(data)
        os.rename(base + ".eml.tmp", base + ".eml")
        with open(base + ".json.tmp", "w") as f:
            json.dump({"mail_from": mail_from, "rcpt_tos": rcpts, "tls": tls}, f)
        os.rename(base + ".json.tmp", base + ".json")
        return self.accepted

    async def handle(self, reader, writer):
        self.connections += 1
        session = Session(self, self.connections, reader, writer)
        try:
            await session.run()
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError) as e:
            session.event(f"error {type(e).__name__}: {e}")
        finally:
            session.event("closed")
            try:
                writer.close()
            except Exception:
                pass


class Closed(Exception):
    pass


class Session:
    def __init__(self, server, n, reader, writer):
        self.s = server
        self.n = n
        self.reader = reader
        self.writer = writer
        self.buf = bytearray()
        self.tls = writer.get_extra_info("ssl_object") is not None
        self.ehlo = False
        self.mail_from = None
        self.rcpts = []
        self.messages = 0
        self.user = None
        self.closing = False

    def event(self, text):
        self.s.log.write(self.n, "!", text)

    async def fill(self):
        data = await self.reader.read(65536)
        if not data:
            raise Closed()
        self.buf += data

    async def line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[: i + 2]
                return line
            await self.fill()

    async def sent_ahead(self):
        """Whether the client sent more bytes before getting the reply it awaits."""
        if self.buf:
            return True
        if self.s.ahead_wait <= 0:
            return False
        try:
            data = await asyncio.wait_for(self.reader.read(65536), self.s.ahead_wait)
        except asyncio.TimeoutError:
            return False
        self.buf += data
        return bool(data)

    async def send(self, *lines):
        # A 421 (scripted or not) ends the session, as RFC 5321 says.
        self.closing = self.closing or lines[-1].startswith("421")
        for l in lines:
            self.s.log.write(self.n, "<", l)
        self.writer.write("".join(l + "\r\n" for l in lines).encode())
        await self.writer.drain()

    def ehlo_lines(self):
        caps = ["smtp.test greets you"]
        if self.s.pipelining:
            caps.append("PIPELINING")
        caps += ["SIZE 67108864", "8BITMIME", "ENHANCEDSTATUSCODES"]
        if self.s.auth:
            caps.append("AUTH " + " ".join(self.s.auth))
        if self.s.args.mode == "starttls" and not self.tls:
            caps.append("STARTTLS")
        return [f"250-{c}" for c in caps[:-1]] + [f"250 {caps[-1]}"]

    async def run(self):
        self.event("connect tls" if self.tls else "connect")
        await self.send("220 smtp.test ESMTP scripted")
        try:
            while True:
                if not await self.command() or self.closing:
                    return
        except Closed:
            self.event("eof")

    async def command(self):
        raw = await self.line()
        text = raw.decode("utf-8", "replace")
        verb = text.split(" ", 1)[0].upper()
        if verb == "AUTH":
            self.s.log.write(self.n, ">", " ".join(text.split(" ")[:2]) + " ***")
        else:
            self.s.log.write(self.n, ">", text)
        must_wait = not self.s.pipelining or verb in GROUP_ENDERS
        if must_wait and await self.sent_ahead():
            self.event(f"ahead after {verb}")
        limit = self.s.args.close_after
        if limit is not None and self.messages >= limit and verb not in {"QUIT"}:
            await self.send(f"421 4.3.2 smtp.test closing after {limit} message(s)")
            return False
        if verb in {"EHLO", "HELO"}:
            self.ehlo = True
            self.reset()
            forced = self.s.reply_for("EHLO")
            if forced:
                await self.send(forced)
            elif verb == "HELO":
                await self.send("250 smtp.test")
            else:
                await self.send(*self.ehlo_lines())
        elif verb == "STARTTLS":
            return await self.starttls()
        elif verb == "AUTH":
            await self.authenticate(text)
        elif verb == "MAIL":
            await self.mail(text)
        elif verb == "RCPT":
            await self.rcpt(text)
        elif verb == "DATA":
            await self.data()
        elif verb == "RSET":
            self.reset()
            await self.send("250 2.0.0 OK")
        elif verb == "NOOP":
            await self.send("250 2.0.0 OK")
        elif verb == "QUIT":
            await self.send("221 2.0.0 Bye")
            return False
        else:
            await self.send("502 5.5.2 command not recognized")
        return True

    def reset(self):
        self.mail_from = None
        self.rcpts = []

    async def starttls(self):
        if self.s.args.mode != "starttls" or self.tls:
            await self.send("502 5.5.1 STARTTLS not offered")
            return True
        forced = self.s.reply_for("STARTTLS")
        if forced:
            await self.send(forced)
            return True
        lines = ["220 2.0.0 Ready to start TLS"]
        if self.s.args.inject_after_starttls is not None:
            lines.append(self.s.args.inject_after_starttls)
        await self.send(*lines)
        if self.buf:
            self.event(f"ahead after STARTTLS ({len(self.buf)} bytes before the handshake)")
            self.buf.clear()
        try:
            await self.writer.start_tls(self.s.ctx)
        except (ssl.SSLError, ConnectionError, OSError) as e:
            self.event(f"handshake-failed {type(e).__name__}")
            return False
        self.tls = True
        self.ehlo = False
        self.user = None
        self.reset()
        self.event("tls")
        return True

    def needs_tls(self):
        return self.s.args.mode == "starttls" and not self.tls

    async def answer(self, challenge):
        """A 334 challenge and the client's base64 answer (None if cancelled or not base64)."""
        await self.send(f"334 {challenge}")
        line = await self.line()
        self.s.log.write(self.n, ">", "***")
        if line == b"*":
            return None
        try:
            return base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError):
            return None

    async def authenticate(self, text):
        words = text.split(" ")
        mech = words[1].upper() if len(words) > 1 else ""
        if not self.s.auth:
            return await self.send("502 5.5.1 AUTH not supported")
        if self.user is not None:
            return await self.send("503 5.5.1 Error: already authenticated")
        if mech not in self.s.auth:
            return await self.send("504 5.5.4 Unrecognized authentication type")
        initial = None
        if len(words) > 2:
            try:
                initial = base64.b64decode(words[2], validate=True)
            except (binascii.Error, ValueError):
                return await self.send("501 5.5.2 Cannot decode response")
        if mech == "PLAIN":
            creds = initial if initial is not None else await self.answer("")
            parts = creds.split(b"\0") if creds is not None else []
            user, password = (parts[1], parts[2]) if len(parts) == 3 else (b"", None)
        elif mech == "LOGIN":
            user = initial if initial is not None else await self.answer("VXNlcm5hbWU6")
            password = await self.answer("UGFzc3dvcmQ6") if user is not None else None
        else:
            return await self.send("504 5.5.4 Unrecognized authentication type")
        if user is None or password is None:
            return await self.send("501 5.7.0 Authentication cancelled")
        name = user.decode("utf-8", "replace")
        if (name, password.decode("utf-8", "replace")) == self.s.account:
            self.user = name
            self.event(f"auth ok {name}")
            return await self.send("235 2.7.0 Authentication successful")
        self.event(f"auth failed {name}")
        await self.send("535 5.7.8 Error: authentication failed")

    async def mail(self, text):
        if self.needs_tls():
            return await self.send("530 5.7.0 Must issue a STARTTLS command first")
        if not self.ehlo:
            return await self.send("503 5.5.1 Error: send HELO/EHLO first")
        if self.s.auth and self.user is None:
            return await self.send("530 5.7.0 Authentication required")
        if self.mail_from is not None:
            return await self.send("503 5.5.1 Error: nested MAIL command")
        forced = self.s.reply_for("MAIL")
        if forced:
            if forced.startswith("2"):
                self.mail_from = address(text)
            return await self.send(forced)
        self.mail_from = address(text)
        self.rcpts = []
        await self.send("250 2.1.0 Ok")

    async def rcpt(self, text):
        if self.needs_tls():
            return await self.send("530 5.7.0 Must issue a STARTTLS command first")
        if self.mail_from is None:
            return await self.send("503 5.5.1 Error: need MAIL command")
        addr = address(text)
        forced = self.s.reply_for("RCPT", addr)
        if forced:
            if forced.startswith("2"):
                self.rcpts.append(addr)
            return await self.send(forced)
        self.rcpts.append(addr)
        await self.send("250 2.1.5 Ok")

    async def data(self):
        if self.needs_tls():
            return await self.send("530 5.7.0 Must issue a STARTTLS command first")
        if self.mail_from is None:
            return await self.send("503 5.5.1 Error: need MAIL command")
        if not self.rcpts:
            return await self.send("554 5.5.1 Error: no valid recipients")
        forced = self.s.reply_for("DATA")
        if forced:
            self.reset()
            return await self.send(forced)
        await self.send("354 End data with <CR><LF>.<CR><LF>")
        lines = []
        while True:
            l = await self.line()
            if l == b".":
                break
            lines.append(l[1:] if l.startswith(b".") else l)
        data = b"".join(l + b"\r\n" for l in lines)
        self.s.log.write(self.n, ">", f"<data {len(data)} bytes>")
        if await self.sent_ahead() and not self.s.pipelining:
            self.event("ahead after end of data")
        if self.s.args.delay_ms:
            await asyncio.sleep(self.s.args.delay_ms / 1000.0)
        forced = self.s.reply_for("DOT", *self.rcpts)
        if forced and not forced.startswith("2"):
            self.reset()
            return await self.send(forced)
        n = self.s.record(self.mail_from, self.rcpts, data, self.tls)
        self.messages += 1
        self.event(f"accepted {n}")
        self.reset()
        await self.send(forced or f"250 2.0.0 Ok: queued as M{n:06d}")


def address(command):
    """The address between < and > of MAIL FROM:<a> / RCPT TO:<a> (parameters ignored)."""
    _, _, rest = command.partition(":")
    rest = rest.strip()
    if rest.startswith("<"):
        return rest[1 : rest.find(">")] if ">" in rest else rest[1:]
    return rest.split(" ", 1)[0]


async def main():
    if sys.version_info < (3, 11):
        sys.exit("scripted_smtp.py needs Python 3.11 or later (StreamWriter.start_tls)")
    p = argparse.ArgumentParser(description="A scripted SMTP server for tests.")
    p.add_argument("--out", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--mode", choices=["plain", "starttls", "tls"], default="plain")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--no-pipelining", action="store_true")
    p.add_argument("--ahead-wait-ms", type=int)
    p.add_argument("--reply", action="append", default=[])
    p.add_argument("--inject-after-starttls")
    p.add_argument("--close-after", type=int)
    p.add_argument("--delay-ms", type=int, default=0)
    p.add_argument("--auth")
    p.add_argument("--auth-user", default="user:secret")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    server = Server(args)
    tcp = await asyncio.start_server(
        server.handle,
        host="127.0.0.1",
        port=args.port,
        ssl=server.ctx if args.mode == "tls" else None,
        limit=1 << 20,
    )
    print(tcp.sockets[0].getsockname()[1], flush=True)
    async with tcp:
        await tcp.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
