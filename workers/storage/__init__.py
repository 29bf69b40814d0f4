"""Cloud-storage targets: files shared in a group land in a store, streamed, once.

``workers.storage.flow`` is the algorithm every store shares (fetch, size and type
checks, path, create-only write, conflicts, ledger, links back); each store module
(``s3``, ``webdav``, ``local``, ``feishu_drive``) supplies a ``Store``.
"""
