-- Status callbacks find a delivery by the id the vendor gave it; channel health reads attempts per channel.
CREATE INDEX deliveries_remote ON deliveries (channel, remote_id);
CREATE INDEX attempts_channel ON attempts (channel, id);
