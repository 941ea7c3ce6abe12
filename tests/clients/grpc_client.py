#!/usr/bin/env python3
"""An independent gRPC client of flujo, in another language.

Compiles proto/flujo/v1/ingest.proto at run time (grpc_tools.protoc, into a
temporary directory), then against the server at ADDR (host:port):

  - grpc.health.v1.Health/Check is SERVING for "" and "flujo.v1.Ingest";
  - PublishSales with three sales (one without id) is acked with 3 ids;
  - PublishTweets with two tweets is acked with 2 ids;
  - a batch whose second sale has price -1 is INVALID_ARGUMENT, with the
    flujo-index / flujo-field trailing metadata;
  - the Stream RPC answers one Ack per event, in order, the bad one refused.

Prints "generated id: <id>" (the id the server made) and
"python gRPC client: OK", and exits 0 on success; exits 1 naming the first
failed check otherwise. Needs grpcio, grpcio-tools and grpcio-health-checking
(scripts/test.sh installs them into .services/venv).

With --ca-file, the channel is gRPC over TLS, the server's certificate checked
against the CA certificates of that PEM file.

Usage: grpc_client.py HOST:PORT [--ca-file CA.pem]
"""

import os
import sys
import tempfile

TIMEOUT = 30  # seconds, for every call

try:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_tools import protoc
except ImportError as e:  # pragma: no cover - environment problem
    sys.stderr.write(
        f"missing Python module ({e}); run scripts/test.sh, which installs "
        "grpcio grpcio-tools grpcio-health-checking into .services/venv\n"
    )
    sys.exit(2)


class CheckFailed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise CheckFailed(what)


def compile_proto(out_dir):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proto_dir = os.path.join(root, "proto")
    # grpc_tools ships the well-known types; none are imported today, but keep the
    # include path so the proto may use them.
    well_known = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{proto_dir}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        "flujo/v1/ingest.proto",
    ]
    code = protoc.main(args)
    check(code == 0, f"protoc failed with {code} on {proto_dir}/flujo/v1/ingest.proto")
    sys.path.insert(0, out_dir)
    from flujo.v1 import ingest_pb2, ingest_pb2_grpc  # noqa: E402 (generated now)

    return ingest_pb2, ingest_pb2_grpc


def open_channel(addr, ca_file):
    if ca_file is None:
        return grpc.insecure_channel(addr)
    with open(ca_file, "rb") as f:
        credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
    return grpc.secure_channel(addr, credentials)


def run(addr, pb, pb_grpc, ca_file=None):
    with open_channel(addr, ca_file) as channel:
        grpc.channel_ready_future(channel).result(timeout=TIMEOUT)

        # Health.
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "flujo.v1.Ingest"):
            resp = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT)
            check(
                resp.status == health_pb2.HealthCheckResponse.SERVING,
                f"Health/Check({service!r}) = {resp.status}, want SERVING",
            )

        ingest = pb_grpc.IngestStub(channel)

        # A batch of sales: client ids echoed, an empty id replaced.
        sales = pb.SaleBatch(
            sales=[
                pb.Sale(id="py-s-1", category=pb.CATEGORY_ELECTRONICS, product_id="PY-TV",
                        price=250.5, quantity=2),
                pb.Sale(category=pb.CATEGORY_HOME, product_id="PY-LAMP", price=20.25, quantity=1),
                pb.Sale(id="py-s-3", category=pb.CATEGORY_BEAUTY, product_id="PY-SOAP",
                        price=3.5, quantity=6),
            ]
        )
        ack = ingest.PublishSales(sales, timeout=TIMEOUT)
        check(ack.accepted == 3, f"PublishSales accepted {ack.accepted}, want 3")
        check(len(ack.ids) == 3, f"PublishSales ids {list(ack.ids)}")
        check(ack.ids[0] == "py-s-1" and ack.ids[2] == "py-s-3", f"ids not echoed: {list(ack.ids)}")
        check(ack.ids[1] != "", "no id generated for a sale without one")
        print(f"generated id: {ack.ids[1]}")

        # A batch of tweets.
        tweets = pb.TweetBatch(
            tweets=[
                pb.Tweet(id="py-t-1", location="Antigua", weather=pb.WEATHER_SUNNY,
                         temperature=26.5, humidity=55.0, text="sol"),
                pb.Tweet(id="py-t-2", location="Zacapa", weather=pb.WEATHER_STORMY,
                         temperature=31.0, humidity=70.0),
            ]
        )
        ack = ingest.PublishTweets(tweets, timeout=TIMEOUT)
        check(ack.accepted == 2 and list(ack.ids) == ["py-t-1", "py-t-2"],
              f"PublishTweets: {ack}")

        # A bad sale: INVALID_ARGUMENT naming index and field; nothing stored.
        bad = pb.SaleBatch(
            sales=[
                pb.Sale(id="py-bad-0", category=pb.CATEGORY_HOME, product_id="X", price=1.0,
                        quantity=1),
                pb.Sale(id="py-bad-1", category=pb.CATEGORY_HOME, product_id="X", price=-1.0,
                        quantity=1),
            ]
        )
        try:
            ingest.PublishSales(bad, timeout=TIMEOUT)
            raise CheckFailed("a sale with price -1 was accepted")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.INVALID_ARGUMENT,
                  f"bad sale: {e.code()}, want INVALID_ARGUMENT ({e.details()})")
            check("price" in (e.details() or ""), f"the message names price: {e.details()!r}")
            trailers = dict(e.trailing_metadata() or ())
            check(trailers.get("flujo-index") == "1", f"flujo-index: {trailers}")
            check(trailers.get("flujo-field") == "price", f"flujo-field: {trailers}")

        # The stream: one Ack per event, in order; a refusal does not end it.
        events = [
            pb.Event(sale=pb.Sale(id="py-st-1", category=pb.CATEGORY_CLOTHING,
                                  product_id="PY-HAT", price=15.0, quantity=1)),
            pb.Event(sale=pb.Sale(id="py-st-2", category=pb.CATEGORY_CLOTHING,
                                  product_id="PY-HAT", price=15.0, quantity=0)),
            pb.Event(tweet=pb.Tweet(id="py-st-3", location="Antigua", weather=pb.WEATHER_RAINY,
                                    temperature=19.0, humidity=90.0)),
        ]
        acks = list(ingest.Stream(iter(events), timeout=TIMEOUT))
        check(len(acks) == 3, f"Stream answered {len(acks)} Acks, want 3")
        check(acks[0].accepted == 1 and list(acks[0].ids) == ["py-st-1"], f"Ack 0: {acks[0]}")
        check(acks[1].accepted == 0 and acks[1].code == "INVALID_ARGUMENT"
              and acks[1].field == "quantity" and acks[1].error != "", f"Ack 1: {acks[1]}")
        check(acks[2].accepted == 1 and list(acks[2].ids) == ["py-st-3"], f"Ack 2: {acks[2]}")


def main(argv):
    if len(argv) == 2:
        ca_file = None
    elif len(argv) == 4 and argv[2] == "--ca-file":
        ca_file = argv[3]
    else:
        sys.stderr.write(__doc__)
        return 2
    with tempfile.TemporaryDirectory(prefix="flujo-proto-") as out_dir:
        try:
            pb, pb_grpc = compile_proto(out_dir)
            run(argv[1], pb, pb_grpc, ca_file)
        except CheckFailed as e:
            sys.stderr.write(f"check failed: {e}\n")
            return 1
        except grpc.RpcError as e:
            sys.stderr.write(f"unexpected gRPC error: {e.code()} {e.details()}\n")
            return 1
        except grpc.FutureTimeoutError:
            sys.stderr.write(f"could not connect to {argv[1]} within {TIMEOUT}s\n")
            return 1
    print("python gRPC client: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
