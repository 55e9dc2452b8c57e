package connector

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// fakeClock is a clock that tests move by hand.
type fakeClock struct{ now time.Time }

func (c *fakeClock) Now() time.Time { return c.now }

func TestBreakerOpensAfterThreshold(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1000, 0)}
	b := NewBreaker(BreakerPolicy{FailureThreshold: 3, Cooldown: 10 * time.Second},
		rand.New(rand.NewPCG(1, 2)), clock.Now)

	assert.False(t, b.Failure())
	assert.False(t, b.Failure())
	assert.Equal(t, BreakerClosed, b.State())
	assert.Zero(t, b.Allow())
	assert.True(t, b.Failure(), "the third failure in a row opens the breaker")
	assert.Equal(t, BreakerOpen, b.State())

	// No dial during the cooldown, which is jittered by at most a fifth.
	wait := b.Allow()
	assert.GreaterOrEqual(t, wait, 10*time.Second)
	assert.LessOrEqual(t, wait, 12*time.Second)
	clock.now = clock.now.Add(wait - time.Millisecond)
	assert.Positive(t, b.Allow())
	assert.Equal(t, BreakerOpen, b.State())

	// After the cooldown one trial goes through.
	clock.now = clock.now.Add(time.Millisecond)
	assert.Zero(t, b.Allow())
	assert.Equal(t, BreakerHalfOpen, b.State())
}

func TestBreakerHalfOpenTrial(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1000, 0)}
	newOpen := func() *Breaker {
		b := NewBreaker(BreakerPolicy{FailureThreshold: 1, Cooldown: time.Second},
			rand.New(rand.NewPCG(1, 2)), clock.Now)
		b.Failure()
		clock.now = b.OpenUntil()
		b.Allow()
		return b
	}

	t.Run("failure reopens", func(t *testing.T) {
		b := newOpen()
		assert.Equal(t, BreakerHalfOpen, b.State())
		assert.True(t, b.Failure())
		assert.Equal(t, BreakerOpen, b.State())
		assert.Positive(t, b.Allow())
	})
	t.Run("success closes", func(t *testing.T) {
		b := newOpen()
		b.Success()
		assert.Equal(t, BreakerClosed, b.State())
		assert.Zero(t, b.Failures())
		assert.Zero(t, b.Allow())
	})
}

func TestBreakerSuccessResetsCount(t *testing.T) {
	b := NewBreaker(BreakerPolicy{FailureThreshold: 2, Cooldown: time.Second}, nil, nil)
	b.Failure()
	b.Success()
	assert.False(t, b.Failure(), "failures are counted in a row")
	assert.Equal(t, BreakerClosed, b.State())
}
