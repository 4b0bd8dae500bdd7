//! registry-client: the OCI distribution protocol (references, auth, manifests,
//! blob streams, retries). It knows nothing of the store or the builder.
