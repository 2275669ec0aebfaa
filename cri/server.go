// Package cri serves the Kubernetes Container Runtime Interface: it checks
// each request, hands it to the image store or the pods below, and turns
// their errors into gRPC status codes. It is the only package that knows
// about gRPC.
package cri

import (
	"context"
	"runtime/debug"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-streaming/pkg/streaming"
	"k8s.io/klog/v2"

	"github.com/husk-runtime/husk/cri/validate"
	"github.com/husk-runtime/husk/oci/image"
	"github.com/husk-runtime/husk/sandbox"
)

// Options is what the services need from the daemon.
type Options struct {
	Images *image.Store
	Pods   *sandbox.Manager
	// Version is husk's own version, semver.
	Version string
	// Info is shown by a verbose Status (crictl info); values are JSON.
	Info map[string]string
	// Stream serves exec and port-forward streams (NewStreamServer).
	Stream streaming.Server
	// RecursiveReadOnlyMounts: the kernel can make mounts read-only
	// recursively ("rro"), which Status tells kubelet.
	RecursiveReadOnlyMounts bool
	// UserNamespaces: pods may have user namespaces of their own
	// (hostUsers: false), which Status tells kubelet.
	UserNamespaces bool
}

// Server implements the CRI RuntimeService and ImageService. RPCs not built
// yet answer codes.Unimplemented through the embedded types.
type Server struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	runtimeapi.UnimplementedImageServiceServer

	opts   Options
	images *image.Store
	pods   *sandbox.Manager
	stream streaming.Server
}

// New makes the services.
func New(opts Options) *Server {
	return &Server{opts: opts, images: opts.Images, pods: opts.Pods, stream: opts.Stream}
}

// NewGRPCServer makes a gRPC server with both CRI services registered and
// husk's interceptors (requests validated, errors mapped to status codes,
// panics turned into Internal errors instead of killing the daemon) and one
// log line per call (callLog). With calls (NewCallMetrics) it counts and
// times every call, outside the others: by the code the client got. extra
// are more options (tracing's stats handler).
func NewGRPCServer(s *Server, calls *grpcprom.ServerMetrics, extra ...grpc.ServerOption) *grpc.Server {
	unary := []grpc.UnaryServerInterceptor{unaryInterceptor}
	stream := []grpc.StreamServerInterceptor{streamInterceptor}
	if calls != nil {
		unary = append([]grpc.UnaryServerInterceptor{calls.UnaryServerInterceptor()}, unary...)
		stream = append([]grpc.StreamServerInterceptor{calls.StreamServerInterceptor()}, stream...)
	}
	g := grpc.NewServer(append([]grpc.ServerOption{
		grpc.StatsHandler(callLog{}),
		grpc.UnknownServiceHandler(unknownMethod),
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
		// kubelet sends large ListContainers answers' worth of requests;
		// match its 16 MiB limit.
		grpc.MaxRecvMsgSize(16 << 20),
		grpc.MaxSendMsgSize(16 << 20),
	}, extra...)...)
	runtimeapi.RegisterRuntimeServiceServer(g, s)
	runtimeapi.RegisterImageServiceServer(g, s)
	return g
}

func unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if r := recover(); r != nil {
			klog.ErrorS(nil, "Panic in CRI call", "method", info.FullMethod, "panic", r, "stack", string(debug.Stack()))
			resp, err = nil, status.Errorf(codes.Internal, "internal error in %s: %v", info.FullMethod, r)
		}
	}()
	if m, ok := req.(proto.Message); ok {
		if err := validate.Request(m); err != nil {
			return nil, toStatus(err)
		}
	}
	resp, err = handler(ctx, req)
	return resp, toStatus(err)
}

func streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	defer func() {
		if r := recover(); r != nil {
			klog.ErrorS(nil, "Panic in CRI call", "method", info.FullMethod, "panic", r, "stack", string(debug.Stack()))
			err = status.Errorf(codes.Internal, "internal error in %s: %v", info.FullMethod, r)
		}
	}()
	return toStatus(handler(srv, validatedStream{ss}))
}

// validatedStream checks each request of a streaming RPC as the unary
// interceptor does.
type validatedStream struct{ grpc.ServerStream }

func (s validatedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if pm, ok := m.(proto.Message); ok {
		return toStatus(validate.Request(pm))
	}
	return nil
}

// unknownMethod answers a method husk does not serve at all (an old
// v1alpha2 client): gRPC would answer Unimplemented too, but without a
// stats event, so the call would leave no line in the log.
func unknownMethod(_ any, stream grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(stream)
	klog.InfoS("CRI call of a method husk does not serve", "method", method, "code", codes.Unimplemented)
	return status.Errorf(codes.Unimplemented, "husk does not serve %s", method)
}
