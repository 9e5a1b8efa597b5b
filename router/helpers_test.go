package router_test

import "github.com/rmqrouter/rmqrouter/actors"

// actorsOneChannel puts every publishing of a connection on one channel, so
// that a channel error hits all publishings in flight.
func actorsOneChannel() actors.Config {
	return actors.Config{PublishChannels: 1}
}
