"""Checkpoint stores: where each (account, stream) records what it has durably delivered.

- `codec`: the JSON forms and name encoding every store shares.
- `blob`: the Azure Blob store, whose unit blobs are leased so that only the owner can commit.
- `leases`: claiming, renewing and giving up those leases; the membership view replicas balance by.

(The file store, the checkpoint protocol, the delivered-uuid ledger and the one-writer lock join this
package later; this module imports nothing, so importing the package never pulls in Azure.)
"""
