"""The Kafka sink: each normalized event one JSON message to a topic (``acks=all``)."""
