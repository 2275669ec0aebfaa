package cri

import (
	"context"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ImageFsInfo reports what the image store takes. The mountpoint is the
// store's directory, which is what kubelet's stats code resolves to a
// device, as containerd reports its snapshotter's directory.
func (s *Server) ImageFsInfo(ctx context.Context, _ *runtimeapi.ImageFsInfoRequest) (*runtimeapi.ImageFsInfoResponse, error) {
	u, err := s.images.Usage(ctx)
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ImageFsInfoResponse{
		ImageFilesystems: []*runtimeapi.FilesystemUsage{{
			Timestamp:  time.Now().UnixNano(),
			FsId:       &runtimeapi.FilesystemIdentifier{Mountpoint: s.images.Dir()},
			UsedBytes:  &runtimeapi.UInt64Value{Value: u.Bytes},
			InodesUsed: &runtimeapi.UInt64Value{Value: u.Inodes},
		}},
	}, nil
}
