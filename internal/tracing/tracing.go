// Package tracing sends OpenTelemetry spans of the daemon's work to an
// OTLP endpoint: each CRI call (from its gRPC handler, continuing the trace
// kubelet's headers carry), and within it the named steps of RunPodSandbox
// and CreateContainer, CNI operations, the monitor's start and each layer
// of a pull. Off by default: the global tracer provider is then
// OpenTelemetry's no-op one, and a span costs a function call.
package tracing

import (
	"context"
	"errors"
	"fmt"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
)

// Config is the [tracing] table of husk's config, with containerd's key
// names.
type Config struct {
	// Endpoint is the OTLP collector's host:port; empty turns tracing off.
	Endpoint string `toml:"endpoint" json:"endpoint"`
	// Protocol is "grpc" (the default) or "http/protobuf".
	Protocol string `toml:"protocol" json:"protocol"`
	// Insecure speaks to the endpoint without TLS.
	Insecure bool `toml:"insecure" json:"insecure"`
	// SamplingRatio is the share of new traces kept, 0 to 1 (default 1);
	// a trace kubelet sampled is kept whatever it is.
	SamplingRatio float64 `toml:"sampling_ratio" json:"sampling_ratio"`
}

// DefaultConfig: off; when on, gRPC and every trace kept.
func DefaultConfig() Config { return Config{Protocol: "grpc", SamplingRatio: 1} }

// Validate checks the settings when the config loads.
func (c Config) Validate() error {
	if c.Protocol != "grpc" && c.Protocol != "http/protobuf" {
		return fmt.Errorf("tracing.protocol: %q is neither \"grpc\" nor \"http/protobuf\"", c.Protocol)
	}
	if c.SamplingRatio < 0 || c.SamplingRatio > 1 {
		return fmt.Errorf("tracing.sampling_ratio: %v is not between 0 and 1", c.SamplingRatio)
	}
	return nil
}

// Enabled says whether spans are sent anywhere.
func (c Config) Enabled() bool { return c.Endpoint != "" }

// Start installs the exporter as the global tracer provider, if tracing is
// on; shutdown sends what is left and stops it.
func Start(ctx context.Context, c Config, version string) (shutdown func(context.Context) error, err error) {
	if !c.Enabled() {
		return func(context.Context) error { return nil }, nil
	}
	var client otlptrace.Client
	if c.Protocol == "http/protobuf" {
		opts := []otlptracehttp.Option{otlptracehttp.WithEndpoint(c.Endpoint)}
		if c.Insecure {
			opts = append(opts, otlptracehttp.WithInsecure())
		}
		client = otlptracehttp.NewClient(opts...)
	} else {
		opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(c.Endpoint)}
		if c.Insecure {
			opts = append(opts, otlptracegrpc.WithInsecure())
		}
		client = otlptracegrpc.NewClient(opts...)
	}
	exp, err := otlptrace.New(ctx, client)
	if err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(
		semconv.ServiceName("husk"), semconv.ServiceVersion(version)))
	if err != nil {
		return nil, errors.Join(fmt.Errorf("tracing: %w", err), exp.Shutdown(ctx))
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(c.SamplingRatio))),
	)
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	return tp.Shutdown, nil
}

// End ends span, marked failed with err if there is one.
func End(span trace.Span, err error) {
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// Tracer is husk's tracer, from the global provider of the moment.
func Tracer() trace.Tracer { return otel.Tracer("github.com/husk-runtime/husk") }
