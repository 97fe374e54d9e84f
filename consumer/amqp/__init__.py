"""The RabbitMQ edge: the inbound contract, connections and topology, event and dead-letter publishing."""
