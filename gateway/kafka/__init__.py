"""Kafka client pieces below every Kafka user (source, buffer, dead-letter store, sink): connection
settings (:mod:`.config`), aiokafka's keyword arguments built from them (:mod:`.security`), the
producer (:mod:`.producer`), the consumer (:mod:`.consumer`) and the one dead-letter producer
(:mod:`.deadletter`).  Nothing else in the gateway makes an aiokafka client."""
