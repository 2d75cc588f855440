"""A real SMTP server (aiosmtpd) for the notifier's e-mail test: prints {"port": N}, then one JSON
line per message it accepts: its envelope sender and recipients, subject and body."""

import email
import json
import socket
import sys
import threading
import time

from aiosmtpd.controller import Controller

LOCK = threading.Lock()


def emit(record):
    with LOCK:
        sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()


class Handler:
    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content)
        emit({
            "from": envelope.mail_from,
            "to": envelope.rcpt_tos,
            # Unfolded: a long subject arrives on several lines.
            "subject": message.get("subject", "").replace("\r\n", "").replace("\n", ""),
            "header_from": message.get("from", ""),
            "body": message.get_payload(decode=True).decode("utf-8", "replace"),
        })
        return "250 Message accepted for delivery"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    emit({"port": port})
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
