package linux

import (
	"fmt"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	libseccomp "github.com/seccomp/libseccomp-golang"
)

var seccompActions = map[specs.LinuxSeccompAction]func(errno uint) libseccomp.ScmpAction{
	specs.ActKill:        func(uint) libseccomp.ScmpAction { return libseccomp.ActKillThread },
	specs.ActKillThread:  func(uint) libseccomp.ScmpAction { return libseccomp.ActKillThread },
	specs.ActKillProcess: func(uint) libseccomp.ScmpAction { return libseccomp.ActKillProcess },
	specs.ActTrap:        func(uint) libseccomp.ScmpAction { return libseccomp.ActTrap },
	specs.ActAllow:       func(uint) libseccomp.ScmpAction { return libseccomp.ActAllow },
	specs.ActLog:         func(uint) libseccomp.ScmpAction { return libseccomp.ActLog },
	specs.ActErrno:       func(e uint) libseccomp.ScmpAction { return libseccomp.ActErrno.SetReturnCode(int16(e)) },
	specs.ActTrace:       func(e uint) libseccomp.ScmpAction { return libseccomp.ActTrace.SetReturnCode(int16(e)) },
}

var seccompOps = map[specs.LinuxSeccompOperator]libseccomp.ScmpCompareOp{
	specs.OpNotEqual: libseccomp.CompareNotEqual, specs.OpLessThan: libseccomp.CompareLess,
	specs.OpLessEqual: libseccomp.CompareLessOrEqual, specs.OpEqualTo: libseccomp.CompareEqual,
	specs.OpGreaterEqual: libseccomp.CompareGreaterEqual, specs.OpGreaterThan: libseccomp.CompareGreater,
	specs.OpMaskedEqual: libseccomp.CompareMaskedEqual,
}

func seccompAction(a specs.LinuxSeccompAction, errno *uint, dflt *uint) (libseccomp.ScmpAction, error) {
	f, ok := seccompActions[a]
	if !ok {
		return 0, fmt.Errorf("seccomp action %q is not supported", a)
	}
	e := uint(1) // EPERM
	if dflt != nil {
		e = *dflt
	}
	if errno != nil {
		e = *errno
	}
	return f(e), nil
}

// loadSeccomp loads the spec's filter, program if it was compiled (as
// libseccomp does: on every thread of the process, whichever executes
// the command), else compiled here with libseccomp.
func loadSeccomp(s *specs.LinuxSeccomp, program []byte) error {
	if s == nil {
		return nil
	}
	if program != nil {
		return loadProgram(program)
	}
	f, err := seccompFilter(s)
	if err != nil {
		return err
	}
	defer f.Release()
	if err := f.Load(); err != nil {
		return fmt.Errorf("loading the seccomp filter: %w", err)
	}
	return nil
}

// seccompFilter compiles the spec's filter with libseccomp; the caller
// releases it.
func seccompFilter(s *specs.LinuxSeccomp) (f *libseccomp.ScmpFilter, err error) {
	def, err := seccompAction(s.DefaultAction, s.DefaultErrnoRet, nil)
	if err != nil {
		return nil, err
	}
	f, err = libseccomp.NewFilter(def)
	if err != nil {
		return nil, fmt.Errorf("seccomp: %w", err)
	}
	defer func() {
		if err != nil {
			f.Release()
		}
	}()
	for _, a := range s.Architectures {
		arch, err := libseccomp.GetArchFromString(archName(a))
		if err != nil {
			continue // an architecture libseccomp does not know cannot run here
		}
		if err := f.AddArch(arch); err != nil {
			return nil, fmt.Errorf("seccomp: %w", err)
		}
	}
	// The filter must not turn a no_new_privs off that the spec did not ask
	// for: husk sets it itself when asked.
	if err := f.SetNoNewPrivsBit(false); err != nil {
		return nil, fmt.Errorf("seccomp: %w", err)
	}
	for _, rule := range s.Syscalls {
		act, err := seccompAction(rule.Action, rule.ErrnoRet, s.DefaultErrnoRet)
		if err != nil {
			return nil, err
		}
		if act == def {
			continue
		}
		var conds []libseccomp.ScmpCondition
		for _, a := range rule.Args {
			op, ok := seccompOps[a.Op]
			if !ok {
				return nil, fmt.Errorf("seccomp operator %q is not supported", a.Op)
			}
			c, err := libseccomp.MakeCondition(a.Index, op, a.Value, a.ValueTwo)
			if err != nil {
				return nil, fmt.Errorf("seccomp: %w", err)
			}
			conds = append(conds, c)
		}
		for _, name := range rule.Names {
			sc, err := libseccomp.GetSyscallFromName(name)
			if err != nil {
				continue // a syscall this kernel or libseccomp does not know
			}
			switch {
			case len(conds) == 0:
				err = f.AddRule(sc, act)
			case sameArgTwice(rule.Args):
				// libseccomp takes one condition per argument in a rule:
				// conditions on one argument become rules of their own.
				for _, c := range conds {
					if err = f.AddRuleConditional(sc, act, []libseccomp.ScmpCondition{c}); err != nil {
						break
					}
				}
			default:
				err = f.AddRuleConditional(sc, act, conds)
			}
			if err != nil {
				return nil, fmt.Errorf("seccomp rule for %s: %w", name, err)
			}
		}
	}
	return f, nil
}

func archName(a specs.Arch) string {
	m := map[specs.Arch]string{
		specs.ArchX86: "x86", specs.ArchX86_64: "amd64", specs.ArchX32: "x32", specs.ArchARM: "arm",
		specs.ArchAARCH64: "arm64", specs.ArchMIPS: "mips", specs.ArchMIPS64: "mips64",
		specs.ArchPPC64LE: "ppc64le", specs.ArchS390X: "s390x", specs.ArchRISCV64: "riscv64",
	}
	if n, ok := m[a]; ok {
		return n
	}
	return string(a)
}

func sameArgTwice(args []specs.LinuxSeccompArg) bool {
	seen := map[uint]bool{}
	for _, a := range args {
		if seen[a.Index] {
			return true
		}
		seen[a.Index] = true
	}
	return false
}
