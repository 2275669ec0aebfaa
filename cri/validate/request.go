package validate

import (
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Request checks what every CRI request must satisfy, whatever its RPC:
// each enum holds one of its defined values (proto3 lets a client send any
// number), and no string holds a NUL, which nothing husk hands a string to
// can carry (a path, a process's arguments or environment, a CNI plugin's
// arguments, a record).
func Request(m proto.Message) error {
	if m == nil {
		return nil
	}
	return walk(m.ProtoReflect(), "")
}

func walk(m protoreflect.Message, prefix string) error {
	var err error
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		field := prefix + string(fd.Name())
		switch {
		case fd.IsMap():
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				key := k.String()
				if strings.IndexByte(key, 0) >= 0 {
					err = invalid(field, "a key holds a NUL")
					return false
				}
				err = value(fd.MapValue(), mv, field+"["+clip(key)+"]")
				return err == nil
			})
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len() && err == nil; i++ {
				err = value(fd, l.Get(i), fieldIndex(field, i))
			}
		default:
			err = value(fd, v, field)
		}
		return err == nil
	})
	return err
}

func value(fd protoreflect.FieldDescriptor, v protoreflect.Value, field string) error {
	switch fd.Kind() {
	case protoreflect.EnumKind:
		if fd.Enum().Values().ByNumber(v.Enum()) == nil {
			return invalid(field, "%d is not a value of %s", v.Enum(), fd.Enum().Name())
		}
	case protoreflect.StringKind:
		if strings.IndexByte(v.String(), 0) >= 0 {
			return invalid(field, "holds a NUL")
		}
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return walk(v.Message(), field+".")
	}
	return nil
}
