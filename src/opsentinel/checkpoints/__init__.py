"""Checkpoint stores: where each (account, stream) records what it has durably delivered.

- `codec`: the JSON forms and name encoding every store shares.
- `blob`: the Azure Blob store, whose unit blobs are leased so that only the owner can commit.
- `ownership`: one unit held by this process (its lease deadline, its loss, its write context).
- `leases`: claiming, renewing, releasing and breaking those leases (`LeaseManager`, asyncio).
- `membership`: every unit's owner, lease state and checkpoint age, and replica heartbeats.

(The file store, the checkpoint protocol, the delivered-uuid ledger and the one-writer lock join this
package later; this module imports nothing, so importing the package never pulls in Azure.)
"""
