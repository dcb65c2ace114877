//! The joiner's inputs by name, and one value per input.

/// The joiner's inputs, by name. [`JoinerInput::ALL`] is their order wherever one value per
/// input is kept ([`PerInput`]), and [`JoinerInput::index`] the number the changelog stores for
/// a progress source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JoinerInput {
    /// Normalized sessions (`NetworkSession`).
    Sessions,
    /// Normalized EDR events (`DeviceEvent`).
    DeviceEvents,
    /// Normalized MDM records (`DeviceContext`).
    DeviceContexts,
}

impl JoinerInput {
    /// Every input, in order.
    pub const ALL: [JoinerInput; 3] = [
        JoinerInput::Sessions,
        JoinerInput::DeviceEvents,
        JoinerInput::DeviceContexts,
    ];

    /// Position in [`JoinerInput::ALL`].
    pub const fn index(self) -> usize {
        match self {
            JoinerInput::Sessions => 0,
            JoinerInput::DeviceEvents => 1,
            JoinerInput::DeviceContexts => 2,
        }
    }
}

/// One value per joiner input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PerInput<T>([T; 3]);

impl<T: Copy> PerInput<T> {
    /// `value(input)` for each input.
    pub fn from_fn(value: impl Fn(JoinerInput) -> T) -> Self {
        Self(JoinerInput::ALL.map(value))
    }

    /// (input, value) pairs in [`JoinerInput::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (JoinerInput, T)> + '_ {
        JoinerInput::ALL.into_iter().zip(self.0)
    }
}

impl PerInput<bool> {
    /// True for `input` alone.
    pub fn only(input: JoinerInput) -> Self {
        Self::from_fn(|i| i == input)
    }
}

impl<T> std::ops::Index<JoinerInput> for PerInput<T> {
    type Output = T;
    fn index(&self, input: JoinerInput) -> &T {
        let [sessions, events, contexts] = &self.0;
        match input {
            JoinerInput::Sessions => sessions,
            JoinerInput::DeviceEvents => events,
            JoinerInput::DeviceContexts => contexts,
        }
    }
}

impl<T> std::ops::IndexMut<JoinerInput> for PerInput<T> {
    fn index_mut(&mut self, input: JoinerInput) -> &mut T {
        let [sessions, events, contexts] = &mut self.0;
        match input {
            JoinerInput::Sessions => sessions,
            JoinerInput::DeviceEvents => events,
            JoinerInput::DeviceContexts => contexts,
        }
    }
}
