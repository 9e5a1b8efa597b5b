// Package actors is rmqrouter's supervision tree, built on protoactor-go.
//
//	root
//	└── supervisor ("connections")
//	    └── connection actor, one per (vhost, user, HMAC of password)
//	        ├── publisher actor: a pool of confirm-mode channels
//	        └── consumer-session actor, one per queue: a consuming channel
//
// Terms (protoactor-go's): an actor processes one message at a time in
// Receive; a PID addresses it; Props describe how to produce it; a
// Supervisor decides what happens when a child fails.
//
// Contracts:
//
//   - Receive never blocks on the broker. Dialling, opening channels,
//     passive declares and closing run in goroutines tracked by the System;
//     their results come back to the actor as messages.
//   - Every request carries a reply that is answered exactly once: by the
//     actor, by a transport callback (confirms), or, when the request reaches
//     an actor that has stopped, by the System's dead-letter handler.
//   - Actors that stop on their own (idle, failed login) ask their parent to
//     retire them; the parent forgets the PID first and then poisons it, so a
//     request is never forwarded to an actor that is already gone.
//   - Credentials reach the connection actor sealed; the password is opened
//     only inside the dial goroutine.
//
// Delivery tags handed to HTTP clients are the router's own: a process-wide
// counter, mapped by the session to (channel generation, broker tag). Tags of
// a closed channel are kept as stale for a while, so an ack for them is
// answered 410 and is never sent to the broker.
package actors
