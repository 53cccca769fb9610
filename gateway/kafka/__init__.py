"""Kafka client pieces below every Kafka user (source, buffer, dead-letter store): connection
settings (:mod:`.config`) and aiokafka's keyword arguments built from them (:mod:`.security`)."""
