"""Everything scalablejob does inside kombu: its Redis transport subclassed (idle-first gate hooks, the shared
client, acks that outlive the channel, redelivery under a fresh tag) and the task message as kombu stores it.
No other module imports kombu."""
