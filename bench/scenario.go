package main

import (
	"fmt"
	"sync/atomic"

	amqp "github.com/rabbitmq/amqp091-go"
)

// worker is one client loop of a round. It is created, with its channel or session, before
// the timed window starts. One goroutine calls step, which performs and records one
// operation, until the round's deadline. close runs after the window.
type worker interface {
	step(rc *roundCtx, st *workerStats)
	close()
}

// scenario describes how to build the workers of both sides.
type scenario struct {
	name string
	// prefill makes every round start with a full queue and end when it is drained.
	prefill bool
}

// workerCount returns how many workers a round of s runs at the given concurrency: mixed
// always needs at least one publisher and one consumer.
func (s scenario) workerCount(concurrency int) int {
	if s.name == "mixed" {
		return mixedPublishers(concurrency) + mixedConsumers(concurrency)
	}
	return concurrency
}

// mixedPublishers and mixedConsumers split the workers of the mixed scenario: half publish
// (rounded up) and half fetch and acknowledge (at least one).
func mixedPublishers(concurrency int) int { return (concurrency + 1) / 2 }
func mixedConsumers(concurrency int) int  { return max(1, concurrency/2) }

func scenarioByName(name string) (scenario, error) {
	switch name {
	case "publish-json", "publish-raw", "publish-batch", "mixed":
		return scenario{name: name}, nil
	case "fetch-ack":
		return scenario{name: name, prefill: true}, nil
	}
	return scenario{}, fmt.Errorf("unknown scenario %q", name)
}

// message returns the AMQP message the direct side publishes and the prefill uses: the
// same body, persistence and content type the router sends for the scenario.
func (env *environment) message(contentType string) amqp.Publishing {
	return amqp.Publishing{
		ContentType:  contentType,
		DeliveryMode: amqp.Persistent,
		Body:         env.payload,
	}
}

// newWorker builds worker index of a round of s on side, authenticating as one of the
// run's credentials in turn. returned counts the direct side's returned messages.
func (env *environment) newWorker(s scenario, sd side, index, concurrency int, returned *atomic.Int64) (worker, error) {
	cfg := env.cfg
	cred := env.creds[index%len(env.creds)]
	conn := env.direct[index%len(env.direct)]

	consumer := s.name == "fetch-ack" || (s.name == "mixed" && index >= mixedPublishers(concurrency))
	if consumer {
		if sd == sideRouter {
			return newRouterConsumer(env.router, cred, env.topo.queue, cfg.prefetch, cfg.fetchMax, cfg.fetchWait)
		}
		return newAMQPConsumer(conn, env.topo.queue, cfg.prefetch, cfg.fetchMax)
	}

	if sd == sideDirect {
		batch := 1
		if s.name == "publish-batch" {
			batch = cfg.batchSize
		}
		contentType := "text/plain"
		if s.name == "publish-raw" {
			contentType = "application/octet-stream"
		}
		return newAMQPPublisher(conn, env.topo, env.message(contentType), batch, cfg.directIDs, returned)
	}

	mode := map[string]publishMode{
		"publish-json":  publishJSON,
		"publish-raw":   publishRaw,
		"publish-batch": publishBatch,
		"mixed":         publishAlternate,
	}[s.name]
	return newRouterPublisher(env.router, cred, env.topo, env.payload, mode, cfg.batchSize), nil
}
