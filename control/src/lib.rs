//! Sekisho's control process: the IKEv2 responder, the tenant registry and
//! policy, which push SA and rule tables to the dataplane through shared
//! memory (see DESIGN.md). Its implementation arrives with the control-plane
//! issue; until then the crate holds only its place in the workspace.
