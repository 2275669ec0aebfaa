// Command grpchealth serves the gRPC health checking protocol for the
// cluster test's grpc probes: the server as a whole ("") and the service
// "up" are SERVING, the service "down" is NOT_SERVING, any other is
// unknown (NotFound).
package main

import (
	"flag"
	"log"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func main() {
	addr := flag.String("listen", ":9090", "address to listen on")
	flag.Parse()
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	h := health.NewServer()
	h.SetServingStatus("up", healthpb.HealthCheckResponse_SERVING)
	h.SetServingStatus("down", healthpb.HealthCheckResponse_NOT_SERVING)
	s := grpc.NewServer()
	healthpb.RegisterHealthServer(s, h)
	log.Printf("serving gRPC health on %s", l.Addr())
	log.Fatal(s.Serve(l))
}
