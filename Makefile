# rmqrouter: `make run` builds and runs the router against the local
# RabbitMQ; `make test` runs everything CI runs.

GO ?= go
STATICCHECK_VERSION ?= v0.8.2
BIN := bin/rmqrouter

.PHONY: build run test lint bench broker

build:
	$(GO) build -o $(BIN) ./cmd/rmqrouter

# broker starts the local RabbitMQ when it does not answer on 127.0.0.1:5672.
broker:
	@./.ci/ensure-broker

run: build broker
	./$(BIN) --log-format text

# Packages run one at a time (-p 1): fault tests stop the broker, close its
# connections and raise alarms, which must not hit another package's tests.
# The allocation tests (named ...Allocs) run again without the race detector,
# which adds allocations of its own.
test: broker
	$(GO) vet ./...
	$(GO) test -race -count=1 -p 1 -timeout 60m ./...
	$(GO) test -count=1 -run 'Allocs$$' ./router/

lint:
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

bench: build broker
	$(GO) run ./bench -router-bin $(BIN)
