"""A webhook receiver for the notifier test: verifies every delivery with the Standard Webhooks
reference library (`standardwebhooks`, PyPI), so the signature is checked by code appreg did not
write, and reports each request as one JSON line on stdout.

Usage: receiver.py MODE; prints {"port": N}, then reads the endpoint's signing secret (whsec_...)
as the first line of stdin and serves. MODE:
  fast   answers 200 to every verified delivery;
  fail3  answers 500 to its first three requests, then 200;
  hang   holds its first three requests for 30 s without answering (the notifier times out), then 200;
  gone   answers 410 Gone (the endpoint asks never to be called again), holding each answer
         until a line "release" arrives on stdin (after the secret);
  big    answers 200 with a 5,000-byte body.
A delivery whose signature does not verify is answered 400 and reported with "bad".
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook

MODE = sys.argv[1]
LOCK = threading.Lock()
STATE = {"requests": 0, "webhook": None}
RELEASED = threading.Event()


def emit(record):
    with LOCK:
        sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, status, body=b"ok"):
        self.send_response(status)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        with LOCK:
            STATE["requests"] += 1
            n = STATE["requests"]
        try:
            payload = STATE["webhook"].verify(body, headers)
        except Exception as e:  # noqa: BLE001 - any failure to verify is reported
            emit({"bad": str(e), "id": headers.get("webhook-id")})
            self.answer(400)
            return
        record = {
            "id": headers["webhook-id"],
            "event_id": payload["event_id"],
            "stream_id": payload["stream_id"],
            "version": payload["version"],
            "type": payload["type"],
            "metadata": payload["metadata"],
            "data": payload["data"],
        }
        if MODE == "fail3" and n <= 3:
            emit(dict(record, status=500))
            self.answer(500)
        elif MODE == "hang" and n <= 3:
            emit(dict(record, status="hang"))
            time.sleep(30)
            try:
                self.answer(200)
            except OSError:
                pass
        elif MODE == "gone":
            emit(dict(record, status=410))
            RELEASED.wait()
            self.answer(410, b"gone")
        elif MODE == "big":
            emit(dict(record, status=200))
            self.answer(200, "é".encode() + b"x" * 4998)
        else:
            emit(dict(record, status=200))
            self.answer(200)

    def log_message(self, *args):
        pass


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    emit({"port": server.server_address[1]})
    STATE["webhook"] = Webhook(sys.stdin.readline().strip())
    threading.Thread(target=release_on_stdin, daemon=True).start()
    server.serve_forever()


def release_on_stdin():
    for line in sys.stdin:
        if line.strip() == "release":
            RELEASED.set()


if __name__ == "__main__":
    main()
