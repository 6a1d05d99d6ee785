-- Every shard's batch records, to see what each web server shipped where (never written to).
CREATE TABLE ship_batches_all AS ship_batches
ENGINE = Distributed({cluster}, {database}, ship_batches, rand());
