"""The pika scenarios of pika_scenarios.py, over TLS to the private node that
scripts/make-tls-captures.sh starts, with Python's SSLKEYLOGFILE key log.

    tls_scenario.py NAME --dir WORKDIR --run RUN   (env: AMQPTRACE_BROKER_PORT,
        AMQPTRACE_TLS_CA, AMQPTRACE_TLS_VERSION=1.2|1.3, AMQPTRACE_TLS_CIPHERS,
        SSLKEYLOGFILE)

NAME is tlsVV[-CIPHER]-SCENARIO (tls13-prefetch-exhausted, tls12-chacha20-healthy):
the scenario part is run unchanged; only the connection parameters differ (an
ssl.SSLContext pinned to one TLS version, and for TLS 1.2 to one cipher suite, so
that each capture exercises one record protection).
"""

import argparse
import os
import ssl

import pika

import pika_scenarios
from common import Scenario


def context():
    # create_default_context() reads SSLKEYLOGFILE (Python 3.8+): the key log the
    # captures are decrypted with is the one Python writes for any user.
    ctx = ssl.create_default_context(cafile=os.environ["AMQPTRACE_TLS_CA"])
    version = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}[
        os.environ["AMQPTRACE_TLS_VERSION"]
    ]
    ctx.minimum_version = version
    ctx.maximum_version = version
    ciphers = os.environ.get("AMQPTRACE_TLS_CIPHERS")
    if ciphers:
        ctx.set_ciphers(ciphers)
    if os.environ.get("SSLKEYLOGFILE"):
        ctx.keylog_filename = os.environ["SSLKEYLOGFILE"]
    return ctx


class TlsScenario(Scenario):
    def params(self, role, **kw):
        # The server name is sent in the ClientHello (SNI): the name a capture
        # without secrets is reported with.
        kw.setdefault("ssl_options", pika.SSLOptions(context(), "localhost"))
        return super().params(role, **kw)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("name")
    ap.add_argument("--dir", required=True)
    ap.add_argument("--run", required=True)
    a = ap.parse_args()
    scenario = next(s for s in pika_scenarios.SCENARIOS if a.name.endswith("-" + s))
    s = TlsScenario(a.name, a.dir, a.run)
    s.save()
    pika_scenarios.SCENARIOS[scenario](s)
    s.save()
    s.done()


if __name__ == "__main__":
    main()
