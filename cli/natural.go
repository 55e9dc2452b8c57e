package cli

import "strings"

// naturalCompare compares two IDs in natural order: runs of digits compare
// by their number, so w2 sorts before w10, and the rest compares byte by
// byte. It returns -1, 0 or +1 as strings.Compare does.
func naturalCompare(a, b string) int {
	for a != "" && b != "" {
		digitsA, digitsB := digitRun(a), digitRun(b)
		if digitsA > 0 && digitsB > 0 {
			numA := strings.TrimLeft(a[:digitsA], "0")
			numB := strings.TrimLeft(b[:digitsB], "0")
			// Without leading zeros, the longer run is the larger number.
			if len(numA) != len(numB) {
				return compareInts(len(numA), len(numB))
			}
			if c := strings.Compare(numA, numB); c != 0 {
				return c
			}
			// Equal numbers: fewer leading zeros first, as in w1 before w01.
			if digitsA != digitsB {
				return compareInts(digitsA, digitsB)
			}
			a, b = a[digitsA:], b[digitsB:]
			continue
		}
		if a[0] != b[0] {
			return compareInts(int(a[0]), int(b[0]))
		}
		a, b = a[1:], b[1:]
	}
	return compareInts(len(a), len(b))
}

// digitRun returns the length of the run of ASCII digits that starts s.
func digitRun(s string) int {
	n := 0
	for n < len(s) && s[n] >= '0' && s[n] <= '9' {
		n++
	}
	return n
}

func compareInts(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
