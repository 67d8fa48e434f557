"""The bundled broker: everything offerstream needs to run on Tansu without a Kafka cluster.

- :mod:`stream.embedded.process`: starts and stops the Tansu binary as a child process.
- :mod:`stream.embedded.host`: the binary, a free loopback port, a child that dies with us.
- :mod:`stream.embedded.kafka_wire`: a Metadata probe spoken by hand, and topic creation.
- :mod:`stream.embedded.transport`: the faust transport that works around Tansu's end offsets
  and fetch waits (the gap guard is :mod:`stream.contiguous`).
- :mod:`stream.embedded.restore`: refills a new, empty broker from the data dir.

Import from the modules; this package re-exports nothing.
"""

__all__: list[str] = []
