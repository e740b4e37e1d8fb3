declare module 'cluster-key-slot' {
  /** The Redis Cluster hash slot (0…16383) of a key, honouring {hash tags}. */
  function calculateSlot (key: string | Buffer): number
  namespace calculateSlot {
    /** The one slot of several keys, or -1 if they hash to different slots. */
    function generateMulti (keys: Array<string | Buffer>): number
  }
  export default calculateSlot
}
