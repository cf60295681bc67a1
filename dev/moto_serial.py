"""The moto server, with requests handled one at a time.

    python dev/moto_serial.py -H 127.0.0.1 -p 5050

`moto_server` handles requests on concurrent threads without isolating them, so two
conditional writes racing on one item can both pass their condition, which DynamoDB never
allows (each conditional write and each transaction is applied atomically). Concurrency tests
of ec2pass would then fail for the emulator's sake, or pass by luck. This launcher keeps moto's
threaded connection handling (the SDKs keep connections alive) but takes one lock around each
request, so every request is atomic, as in DynamoDB.

It also stops a leak: moto 5.2.5 tracks every DynamoDB model object it creates, the copies of the
whole table that each TransactWriteItems takes for rollback included, and never lets them go. A
long test run grew the emulator past 20 GB. Nothing reads those lists, so they are emptied after
every request.
"""

import argparse
import threading

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.core.model_instances import model_data
from werkzeug.serving import run_simple


def serialized(app):
    lock = threading.Lock()

    def call(environ, start_response):
        with lock:
            try:
                # Drain the response inside the lock: the work may happen while it is iterated.
                return list(app(environ, start_response))
            finally:
                for model in model_data.get("dynamodb", {}).values():
                    model.instances_tracked.clear()

    return call


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5050)
    args = parser.parse_args()
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(
        args.host,
        args.port,
        serialized(app),
        threaded=True,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
